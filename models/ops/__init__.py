"""The operators: the deformable convolution (DCNv1/v2, torchvision's layout), deformable RoI
pooling, and the cores of InternImage's DCNv3 and FlashInternImage's DCNv4. Tensors in,
tensors out; each file is a functional op plus a thin module."""
