"""Data: readers for the real formats, generated stand-ins, sparse annotation.

See :mod:`.readers`, :mod:`.synthetic`, :mod:`.sparse`, :mod:`.datasets` and the
fetch command :mod:`.fetch` (``python -m affcons_lib.data.fetch --list``).
"""

from .datasets import (
    FIBSEM_FILE,
    NUCLEI_DIR,
    Dataset,
    ImageCollection,
    mirror_to_shape,
    data_dir,
    is_image_collection,
    load_image_collection,
    load_image,
    load_volume,
    normalize_raw,
    real_image_dir,
    real_volume_path,
)
from .readers import (
    DataFormatError,
    read_bbbc039,
    read_cremi,
    read_cvppp,
    read_image_pair,
    read_label_image,
    read_snemi,
)
from .sparse import ANNOTATION_MODES, annotate_instances, instance_sizes
from .synthetic import make_em_volume, make_nuclei_image

__all__ = [
    "FIBSEM_FILE", "NUCLEI_DIR", "Dataset", "ImageCollection", "is_image_collection", "load_image_collection", "data_dir", "load_image", "load_volume", "normalize_raw", "mirror_to_shape",
    "real_image_dir", "real_volume_path", "DataFormatError", "read_bbbc039", "read_cremi", "read_cvppp",
    "read_image_pair", "read_label_image", "read_snemi", "ANNOTATION_MODES", "annotate_instances",
    "instance_sizes", "make_em_volume", "make_nuclei_image",
]
