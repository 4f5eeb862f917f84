"""The network: the M3D-NCA architecture (``config``), its update rule (``rule``, ``depthwise``,
``firing``) and the multi-level model (``model``) in plain torch.

Owns what a model *is* and how one step of it runs; knows nothing of files, images or commands.
May import torch and the ground modules of ``nca_core`` (``errors``, ``fields``) only.
"""
