"""Tiny model specs shared by the model tests (CPU-size, random init)."""

TINY = {"encoder": {"name": "test_convnext"}, "decoder": {"name": "test_convnext"},
        "depth": {"max_depth": 10.0}, "semantic": {"num_classes": 5}}
TINY_SWIN = {
    "encoder": {"name": "swin_tiny_patch4_window7_224", "img_size": [64, 96],
                "kwargs": {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                           "window_size": 4}},
    "decoder": {"name": "test_convnext"}, "semantic": {"num_classes": 5},
}
TINY_VIT = {
    "encoder": {"name": "vit_small_patch14_dinov2", "img_size": [56, 84],
                "kwargs": {"embed_dim": 48, "depth": 4, "num_heads": 2}},
    "decoder": {"name": "test_convnext"}, "semantic": {"num_classes": 5},
}
