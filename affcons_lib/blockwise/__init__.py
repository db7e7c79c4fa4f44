"""The recipe on volumes larger than memory, block by block with daisy.

- :mod:`.predict`: affinities of a volume on disk, block by block, equal to the
  in-memory prediction;
- :mod:`.segment`: fragments, edges, one graph step and relabelling, equal to the
  in-memory recipe;
- :mod:`.score`: VOI and ARAND of every threshold, block by block;
- :mod:`.store`: where a run keeps what it writes (the one module naming its files);
- :mod:`.schedule` and :mod:`.workers`: daisy tasks, launched workers, memory.

Memory: a worker holds one block (and its context), never the volume; the graph
step holds the graph: about 2 kB per edge with its 1 kB histogram
(``benchmarks/bench_blockwise.py`` measures it). Resume: daisy marks finished
blocks (``OUT/tracking``); edges, exits, history and tables are written
atomically; a killed run started again skips what is done.

Imports: data, segmentation, evaluation, training and the top-level helpers.
"""
