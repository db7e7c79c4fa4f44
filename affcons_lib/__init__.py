"""affcons_lib: sparsely supervised instance segmentation with cross-representation
affinity consistency (Liu et al., ICCV 2023). Subpackages that show the architecture;
see README.md and notebooks/book/library.md."""

from ._paths import runs_dir

__all__ = ["runs_dir"]
