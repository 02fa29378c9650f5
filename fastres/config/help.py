"""--help: one sentence per config key, with its unit; keys grouped by subject, in this order.

The sentences are the sections' declarations (fastres.config.sections), read when asked for: an optimizer
or schedule registered after import shows up in the sentences that list them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields

from fastres.config.key import sentence
from fastres.config.sections import SECTIONS

__all__ = ["HELP", "help_groups"]


def help_groups() -> dict[str, dict[str, str]]:
    """{group title: {key: its --help sentence}}, groups and keys in the order of --help."""
    groups: dict[str, dict[str, str]] = {}
    for section in SECTIONS:
        groups.setdefault(section.title, {}).update({f.name: sentence(f) for f in fields(section)})
    return groups


class _Help(Mapping):
    """help_groups() as a mapping, made when read."""

    def __getitem__(self, title: str) -> dict[str, str]:
        return help_groups()[title]

    def __iter__(self) -> Iterator[str]:
        return iter(help_groups())

    def __len__(self) -> int:
        return len(help_groups())


HELP: Mapping[str, dict[str, str]] = _Help()
