"""affcons_lib: sparsely supervised instance segmentation with cross-representation
affinity consistency (Liu et al., ICCV 2023). One module per idea; see README.md."""

from ._paths import runs_dir

__all__ = ["runs_dir"]
