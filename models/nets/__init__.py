"""The networks built from :mod:`models.ops`: digit classifiers (``digits``), dense scene models
(``scenes``) and RoI models (``roi``), each with a regular twin, each describing its stacked
sampling layers through ``sampling_layers()`` (:mod:`models.contract`)."""
