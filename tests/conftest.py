"""Shared fixtures. Real data comes from AFFCONS_DATA_DIR (the Makefile points it
at ../shared/data when present); tests that need it skip with the reason."""

from __future__ import annotations

import pytest

from affcons_lib.data import FIBSEM_FILE, ISBI_DIR, NUCLEI_DIR, data_dir, real_image_dir, real_isbi_dir, real_volume_path


@pytest.fixture(scope="session")
def fibsem_path():
    p = real_volume_path()
    if p is None:
        pytest.skip(f"real FIB-SEM volume not found at {data_dir() / FIBSEM_FILE} (set AFFCONS_DATA_DIR)")
    return p


@pytest.fixture(scope="session")
def nuclei_dir():
    p = real_image_dir()
    if p is None:
        pytest.skip(f"real DSB2018 nuclei sample not found at {data_dir() / NUCLEI_DIR} (set AFFCONS_DATA_DIR)")
    return p


@pytest.fixture(scope="session")
def isbi_dir():
    p = real_isbi_dir()
    if p is None:
        pytest.skip(f"real ISBI 2012 sections not found at {data_dir() / ISBI_DIR} (set AFFCONS_DATA_DIR)")
    return p
