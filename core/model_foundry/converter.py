"""The cattrs converter that turns config instances back into plain data (for config.yaml and JSON)."""

from __future__ import annotations

import enum

import cattrs

converter = cattrs.Converter()
converter.register_unstructure_hook(enum.Enum, lambda member: member.value)
