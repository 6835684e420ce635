"""The architecture vocabulary: Arch and its block strings, blocks, builder, cost model, spaces.

Importing this package loads no torch; `build_model` and the cost model load it on use.
"""

from search_spaces.arch import Arch, ArchError, StageSpec, decode_stage, encode_stage

__all__ = ["Arch", "ArchError", "StageSpec", "decode_stage", "encode_stage"]
