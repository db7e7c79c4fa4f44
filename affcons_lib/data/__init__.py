"""Data: readers for the real formats, generated stand-ins, sparse annotation.

See :mod:`.readers`, :mod:`.synthetic`, :mod:`.sparse`, :mod:`.datasets` and the
fetch command :mod:`.fetch` (``python -m affcons_lib fetch --list``).

Imports: the top-level helpers only; it is the lowest package, everything may use it.
"""

from .datasets import (FIBSEM_FILE, NUCLEI_DIR, Dataset, ImageCollection, mirror_to_shape, data_dir, data_dirs, is_image_collection, load_image_collection, load_image, load_volume, normalize_raw, check_finite, real_image_dir, real_isbi_dir, real_cremi_sparse_dir, CREMI_SPARSE_DIR, real_volume_path, split_sections, ISBI_DIR)
from .readers import (DataFormatError, read_bbbc039, read_cremi, read_cvppp, read_isbi2012, read_array, read_image_pair, read_label_image, read_raw_and_labels, read_snemi, split_path_key, open_volume)
from .sparse import ANNOTATION_MODES, annotate_instances, check_sparse_annotation, instance_sizes
from .synthetic import make_em_volume, make_nuclei_image

__all__ = [
    "FIBSEM_FILE", "NUCLEI_DIR", "Dataset", "ImageCollection", "is_image_collection", "load_image_collection", "data_dir", "data_dirs", "load_image", "load_volume", "normalize_raw", "check_finite", "mirror_to_shape",
    "real_image_dir", "real_isbi_dir", "ISBI_DIR", "real_cremi_sparse_dir", "CREMI_SPARSE_DIR", "real_volume_path", "split_sections", "DataFormatError", "read_bbbc039", "read_cremi", "read_cvppp", "read_isbi2012",
    "read_array", "read_image_pair", "read_label_image", "read_raw_and_labels", "read_snemi", "split_path_key", "open_volume", "ANNOTATION_MODES", "annotate_instances", "check_sparse_annotation",
    "instance_sizes", "make_em_volume", "make_nuclei_image",
]
