"""The app's "Your model" mode (streamlit run app.py -- --model ...), through AppTest."""

from __future__ import annotations

import sys

import pytest
from streamlit.testing.v1 import AppTest

import viz
from tests.conftest import REPO
from viz.samples import load_samples
from viz.views import VIEWS

APP = str(REPO / "app.py")
EXAMPLE = ["--model", "examples.dcn_resnet:dcn_resnet", "--weights", str(REPO / "examples" / "dcn_resnet_digits.pt")]


def _run(monkeypatch, args: list[str]) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", *args])
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _predicted(at: AppTest) -> str:
    """The class the page says the model predicts (a heading under "Your model predicts", so that a
    long class name wraps instead of being cut)."""
    assert any(c.value == "Your model predicts" for c in at.caption)
    return next(m.value.removeprefix("#### ") for m in at.markdown if m.value.startswith("#### "))


def _captions(at: AppTest) -> str:
    return " | ".join(c.value for c in at.caption)


def test_the_example_model_opens_in_its_own_mode_with_points_and_prediction(monkeypatch):
    at = _run(monkeypatch, EXAMPLE)
    assert at.radio(key="user_source").value == "Sample digit"  # the page of your model opens first
    assert "stage2.2.conv2" in at.code[0].value  # the discovery report
    model = viz.load_user_model(EXAMPLE[1], weights=EXAMPLE[3])
    want = viz.capture(model, viz.prepare_for(model, load_samples().images[1, 0].numpy())).predictions[0]
    assert _predicted(at) == str(int(want))
    assert "Unit (7, 7): 729 sampling points" in _captions(at)
    at.slider(key="user_unit_row").set_value(3).run()
    assert not at.exception
    assert "Unit (3, 7): 729 sampling points" in _captions(at)
    at.number_input(key="user_sample").set_value(0).run()  # a new digit starts at the centre unit
    assert "Unit (7, 7)" in _captions(at)
    for view in VIEWS[1:]:  # DCNv2's views work on a discovered torchvision model too
        at.radio(key="user_view").set_value(view).run()
        assert not at.exception, [e.message for e in at.exception]


def test_a_model_that_cannot_be_back_projected_gets_a_message_not_a_traceback(monkeypatch):
    at = _run(monkeypatch, ["--model", "tests.user_models:not_stacked"])
    assert at.error and "Could not use your model" in at.error[0].value
    assert "are not stacked" in at.error[0].value


def test_without_model_the_mode_is_not_offered(monkeypatch):
    at = _run(monkeypatch, [])
    with pytest.raises(ValueError):  # no such page
        at.switch_page("ui/user.py")
    assert at.selectbox(key="scene_model")  # the scene page opens first


@pytest.mark.parametrize("bad", [["--model", "no_such_module:f"], EXAMPLE[:2] + ["--weights", "missing.pt"]])
def test_bad_model_options_are_explained(monkeypatch, bad):
    at = _run(monkeypatch, bad)
    assert at.error and "Could not use your model" in at.error[0].value


def test_own_checkpoints_from_the_command_line_are_listed_beside_the_shipped_ones(monkeypatch, tmp_path):
    import shutil

    digit, scene = tmp_path / "my_digits.pt", tmp_path / "my_scenes.pt"
    shutil.copy(REPO / "checkpoints" / "deform_plain.pt", digit)
    shutil.copy(REPO / "checkpoints" / "scene_deform2.pt", scene)
    at = _run(monkeypatch, ["--checkpoint", str(digit), "--checkpoint", str(scene), "--checkpoint", "nope.pt"])
    assert f"{scene}: yours, deform2" in at.selectbox(key="scene_model").options  # options show the labels
    at.selectbox(key="scene_model").set_value(str(scene)).run()
    assert not at.exception
    assert any("nope.pt" in e.value for e in at.error)  # a bad one is named, the page still works
    at.switch_page("ui/digits.py").run()
    box = next(s for s in at.selectbox if s.label == "Checkpoint")
    assert f"{digit}: yours, deform" in box.options
    box.set_value(str(digit)).run()
    assert not at.exception, [e.message for e in at.exception]
    assert next(m.value for m in at.metric if m.label == "Deformable predicts") == "2"  # sample 1, a 2


def test_an_internimage_style_model_shows_its_groups_and_family(monkeypatch):
    """A DCNv3 model found by structure: a group selector, the family named, every group's
    samples by default and one group's when chosen; DCNv2's views work on it too."""
    at = _run(
        monkeypatch,
        [
            "--model",
            "examples.dcn_families:intern_image",
            "--input-size",
            "32",
            "--in-channels",
            "3",
            "--mean",
            "0",
            "--std",
            "1",
        ],
    )
    assert "dcnv3" in at.code[0].value
    assert at.selectbox(key="user_group").value == "all groups"
    assert "Unit (4, 4): 1296 sampling points (level 2)" in _captions(at)
    assert "InternImage's DCNv3" in _captions(at) and "4 group(s) x 9 points" in _captions(at)
    at.selectbox(key="user_group").set_value("group 2 at the top").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "Unit (4, 4): 324 sampling points (level 2)" in _captions(at)
    for view in VIEWS[1:]:
        at.radio(key="user_view").set_value(view).run()
        assert not at.exception, [e.message for e in at.exception]


def test_a_user_package_called_models_opens_in_the_app(monkeypatch, tmp_path):
    from tests.test_user_code import write_user_package

    pkg = write_user_package(tmp_path) / "models"
    at = _run(monkeypatch, ["--model", f"{pkg / 'net.py'}:build"])
    assert at.radio(key="user_source")  # the page of your model opens first
    assert "blocks.2.conv" in at.code[0].value
    assert "Unit (7, 7): 729 sampling points" in _captions(at)


def test_a_user_package_called_models_opens_by_name_from_its_folder(monkeypatch, tmp_path):
    from tests.test_user_code import write_user_package

    write_user_package(tmp_path)
    monkeypatch.chdir(tmp_path)
    at = _run(monkeypatch, ["--model", "models.net:build"])
    assert "blocks.2.conv" in at.code[0].value
    assert "Unit (7, 7): 729 sampling points" in _captions(at)
    assert type(viz.load("scene_deform")).__name__ == "SceneNet"  # deformscope's own, same process


def test_the_levels_slider_spans_every_stacked_layer_of_the_model(monkeypatch):
    at = _run(monkeypatch, ["--model", "tests.user_models:four_layers"])
    slider = at.slider(key="user_levels")
    assert slider.max == 4 and slider.value == 3
    slider.set_value(4).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "(level 4)" in _captions(at) and "6561" in _captions(at)


def test_a_colour_model_gets_photos_named_classes_and_a_top_five(monkeypatch, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {c}" for c in "abcdefghij"))
    spec = ["--model", "examples.dcn_families:intern_image", "--input-size", "32", "--in-channels", "3"]
    at = _run(monkeypatch, [*spec, "--mean", "0", "--std", "1", "--classes", str(names)])
    assert at.radio(key="user_source").options == ["Sample photo", "Upload"]  # no MNIST digits for RGB
    assert at.selectbox(key="user_photo").value == "chelsea"
    model = viz.load_user_model("examples.dcn_families:intern_image", input_size=32, in_channels=3, mean=0, std=1)
    p = viz.capture(model, viz.prepare_for(model, viz.sample_photo("chelsea"))).probabilities[0]
    best = [f"class {'abcdefghij'[int(i)]}" for i in p.argsort(descending=True)[:5]]
    assert _predicted(at) == best[0]
    assert "Top 5: " + ", ".join(
        f"{n} {float(v):.1%}" for n, v in zip(best, p.sort(descending=True).values[:5], strict=True)
    ) in _captions(at)
    at.selectbox(key="user_photo").set_value("coffee").run()
    assert not at.exception, [e.message for e in at.exception]


def test_a_six_layer_model_shows_as_deep_as_the_point_budget_allows(monkeypatch):
    at = _run(monkeypatch, ["--model", "tests.user_models:six_layers"])
    slider = at.slider(key="user_levels")
    assert slider.max == 6 and slider.value == 3
    slider.set_value(5).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "(level 5)" in _captions(at) and "59049" in _captions(at)
    slider.set_value(6).run()
    assert not at.exception, [e.message for e in at.exception]
    said = _captions(at)
    assert (
        "Showing layers 6 down to 2 of your model's 6 stacked layers (1 = bottom): one more would give 531,441" in said
    )
    assert "(level 5)" in said
    # the bottom layer in a window: back-project from layer 5 of 6, down to layer 1
    window = at.selectbox(key="user_window_top")
    assert window.options[0].startswith("6 of 6: layers.5") and window.value == 5
    window.set_value(4).run()
    assert not at.exception, [e.message for e in at.exception]
    said = _captions(at)
    assert "Showing layers 5 down to 1 of your model's 6 stacked layers (1 = bottom)." in said
    assert "59049 sampling points (level 5)" in said
    at.radio(key="user_view").set_value(VIEWS[1]).run()  # the ERF is the model's top unit's
    assert not at.exception and any("choose the top layer" in i.value for i in at.info)


def test_loading_says_what_it_does_then_that_the_model_is_ready(monkeypatch):
    steps = []
    import ui.inputs  # noqa: F401  (the app's modules on the path, as the app has them)
    import viz.user_model as user_model

    real = user_model.load_user_model

    def recording(*args, progress=None, **kwargs):
        def hear(step):
            steps.append(step)
            if progress is not None:
                progress(step)

        return real(*args, progress=hear, **kwargs)

    monkeypatch.setattr(user_model, "load_user_model", recording)
    at = _run(monkeypatch, [*EXAMPLE, "--input-size", "28", "--mean", "0.1307", "--std", "0.3081"])
    assert [(s.label, s.state) for s in at.status] == [
        ("Your model is ready: 3 stacked deformable layer(s) found", "complete")
    ]
    assert steps[0].startswith("building examples.dcn_resnet:dcn_resnet()") and steps[-1].startswith(
        "probing where 3 layer(s)"
    )
    at.run()  # later updates of the session: no status line
    assert not at.status
