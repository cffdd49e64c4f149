"""Structured channel pruning of ResNets: channels are physically removed.

>>> groups = list_groups(model)                       # block groups and stage groups, by name
>>> pruned, kept = prune(model, PruneSpec(ratios={"layer2.0.conv1": 0.5}), input_size=32)
>>> same = rebuild(fresh_model, kept)                 # replays the recorded kept indices
>>> shallower = drop_blocks(model, ["layer3.8"])        # depth pruning: whole identity-shortcut blocks
>>> kept = match_kept(model, pruned_elsewhere)         # kept indices of another tool's pruned copy

Option-A (zero-padding) shortcuts are first converted to exactly equivalent fixed 1x1 convs
(:func:`convert_option_a`) so coupled channels stay aligned through the residual additions.
"""

from compress.prune._coupling import Coupling, channel_coupling
from compress.prune._depth import DroppedBlock, block_errors, drop_blocks, droppable_blocks
from compress.prune._groups import PruneGroup
from compress.prune._match import MatchError, match_kept
from compress.prune._option_a import convert_option_a, has_option_a
from compress.prune._prune import KEPT_ATTR, list_groups, prune, rebuild

__all__ = [
    "KEPT_ATTR", "Coupling", "DroppedBlock", "MatchError", "PruneGroup", "block_errors", "channel_coupling",
    "convert_option_a", "drop_blocks", "droppable_blocks", "has_option_a", "list_groups", "match_kept", "prune",
    "rebuild",
]
