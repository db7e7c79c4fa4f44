"""A launched worker (``python -m affcons_lib blockwise worker KIND SPEC``): the
kinds of block and the loop that processes them until the scheduler has none left."""

from __future__ import annotations

import json

from .predict import PredictSpec, predict_block
from .segment import SegmentSpec, edges_block, fragments_block, relabel_block

BLOCK_FUNCTIONS = {"predict": predict_block, "fragments": fragments_block, "edges": edges_block,
                   "relabel": relabel_block}


#: the kinds of block a worker processes (``python -m affcons_lib blockwise worker KIND SPEC``)
BLOCK_KINDS = tuple(sorted(BLOCK_FUNCTIONS))


SPECS = {"predict": PredictSpec, "fragments": SegmentSpec, "edges": SegmentSpec, "relabel": SegmentSpec}


def run_worker(kind: str, spec_json: str) -> int:
    """The loop of a launched worker: blocks from the scheduler until none is left."""
    from daisy.v2 import Client

    if kind not in BLOCK_FUNCTIONS:
        raise ValueError(f"worker: expected one of {sorted(BLOCK_FUNCTIONS)}, got {kind!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(spec_json).items()}
    spec, process = SPECS[kind](**fields), BLOCK_FUNCTIONS[kind]
    client = Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                return 0
            process(spec, block)
