"""Depth pruning: whole residual blocks removed, so the network runs fewer operators.

A residual block whose shortcut is the identity computes ``relu(x + f(x))``; dropping it leaves
``x`` (its input is already the output of a ReLU, or the stem's). The block is replaced by
:class:`DroppedBlock`, a parameter-free identity that keeps the module name visible in
``print(model)``. Blocks that change the shape (a stride or a width change: option-A padding
shortcuts, downsample convs) cannot be dropped; they are not offered.

Channel pruning runs after the drop, on the shallower network, so the dropped blocks' inner
groups disappear and the stage groups lose their members in those blocks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from torch import nn

from spaces._schema import FieldError, join_path
from spaces.policy import PolicyError

_BLOCK = re.compile(r"^layer\d+\.\d+$")


class DroppedBlock(nn.Identity):
    """Where a residual block was dropped (``prune.drop``): the identity, no parameters."""


def _is_identity_block(module: nn.Module) -> bool:
    """A residual block whose shortcut is the identity (CIFAR ``shortcut``, torchvision ``downsample``)."""
    if hasattr(module, "shortcut"):
        return isinstance(module.shortcut, nn.Identity)
    if hasattr(module, "downsample"):
        return module.downsample is None
    return False


def droppable_blocks(model: nn.Module) -> list[str]:
    """Names of the residual blocks of ``model`` that :func:`drop_blocks` can remove, in network order.

    A block qualifies when it is named ``layer<S>.<i>`` and its shortcut is the identity
    (same width and resolution in and out).
    """
    return [name for name, m in model.named_modules() if _BLOCK.match(name) and _is_identity_block(m)]


def block_errors(names: Sequence[str], model: nn.Module) -> list[FieldError]:
    """One error per entry of ``prune.drop`` that is not a droppable block of ``model``."""
    if not names:  # every apply() validates: nothing to walk for the common case
        return []
    ok = droppable_blocks(model)
    modules = dict(model.named_modules())
    errors = []
    for i, name in enumerate(names):
        if name in ok:
            continue
        why = ("its shortcut changes the shape (stride or width), so it cannot be dropped"
               if name in modules and _BLOCK.match(name) else "not a residual block of this model")
        shown = ", ".join(ok[:12]) + (" ..." if len(ok) > 12 else "")
        errors.append(FieldError(join_path("prune.drop", i), name, f"{why}; droppable blocks: {shown or 'none'}"))
    return errors


def drop_blocks(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A copy of ``model`` with the residual blocks ``names`` replaced by :class:`DroppedBlock`.

    ``model`` is not modified. Raises :class:`PolicyError` naming every block that cannot be
    dropped (unknown, or a block whose shortcut changes the shape).
    """
    errors = block_errors(names, model)
    if errors:
        raise PolicyError(errors)
    out = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name), child, DroppedBlock())
    return out
