"""Prompt files for the text-to-image evaluation: `.txt`, `.jsonl`, `.json` (COCO captions too), `.csv`, and
GenEval's `evaluation_metadata.jsonl`.

    prompts = load_prompts("coco6k_captions.txt", max_prompts=100)
"""

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


PROMPT_FIELDS = ("caption", "prompt", "text")
PROMPT_FILE_FORMATS = (".txt", ".jsonl", ".json", ".csv")


@dataclass
class PromptSet:
    """The prompts of a file, in file order, with what was skipped.

    `records` holds each prompt's original JSON object (`None` for `.txt` lines): GenEval's metadata is written back
    per prompt.
    """

    path: str
    format: str
    field: str | None
    prompts: list[str]
    records: list[dict | None]
    num_entries: int
    num_empty_skipped: int
    sha256: str
    num_available: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "field": self.field,
            "sha256": self.sha256,
            "num_entries": self.num_entries,
            "num_empty_skipped": self.num_empty_skipped,
            "num_available": self.num_available,
            "num_prompts": len(self.prompts),
        }


def load_prompts(path: str | os.PathLike, field: str | None = None, max_prompts: int | None = None) -> PromptSet:
    """Reads a prompt file; empty prompts are skipped and counted, anything malformed raises a ValueError naming
    the file and line.

    Formats (by extension): `.txt` one prompt per line; `.jsonl` one JSON object per line; `.json` a list of strings
    or objects, or an object with an `annotations` list (COCO's `captions_val2014.json`); `.csv` a header row and one
    row per prompt. The prompt is `field`, by default the first of `caption`, `prompt`, `text` that the entry has.
    Surrounding whitespace is stripped (COCO captions often end in spaces or a newline).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {path} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    if suffix not in PROMPT_FILE_FORMATS:
        raise ValueError(f"{path}: unsupported prompt file type {suffix!r}; use one of {PROMPT_FILE_FORMATS}.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); save the prompts as UTF-8.") from error

    entries: list[tuple[str, Any]] = []  # (where, raw entry) in file order; None marks an empty line
    if suffix == ".txt":
        entries = [(f"line {number}", line) for number, line in enumerate(text.splitlines(), start=1)]
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                entries.append((f"line {number}", None))
                continue
            try:
                entries.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({error}); a .jsonl file holds one JSON object per line."
                ) from error
    elif suffix == ".json":
        try:
            loaded = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from error
        if isinstance(loaded, dict) and isinstance(loaded.get("annotations"), list):
            loaded = loaded["annotations"]  # COCO's captions_*.json
        if not isinstance(loaded, list):
            raise ValueError(
                f"{path}: a .json prompt file must hold a list of prompts (strings or objects) or COCO's "
                f"{{'annotations': [...]}}, got a {type(loaded).__name__}."
            )
        entries = [(f"entry {number}", entry) for number, entry in enumerate(loaded)]
    else:  # .csv
        rows = list(csv.DictReader(io.StringIO(text, newline="")))  # quoted captions may span lines
        entries = [(f"row {number}", row) for number, row in enumerate(rows, start=2)]

    prompts, records, num_empty = [], [], 0
    chosen_field = field if suffix != ".txt" else None
    for where, entry in entries:
        if isinstance(entry, dict):
            if chosen_field is None:
                chosen_field = next((name for name in PROMPT_FIELDS if name in entry), None)
            if chosen_field is None or chosen_field not in entry:
                available = ", ".join(map(str, entry)) or "none"
                wanted = repr(chosen_field) if chosen_field else f"one of {PROMPT_FIELDS}"
                raise ValueError(
                    f"{path}, {where}: no prompt field {wanted} (fields: {available}); pass "
                    "--prompt_field with the name of the caption field."
                )
            value, record = entry[chosen_field], entry
        elif entry is None or isinstance(entry, str):
            value, record = entry, None
        else:
            raise ValueError(f"{path}, {where}: expected a prompt string or an object, got {type(entry).__name__}.")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path}, {where}: the prompt must be a string, got {type(value).__name__} {value!r}.")
        value = (value or "").strip()
        if not value:
            num_empty += 1
            continue
        prompts.append(value)
        records.append(record)
    num_available = len(prompts)
    if not prompts:
        raise ValueError(
            f"{path} holds no prompts ({len(entries)} entries, {num_empty} empty); expected {_format_description(suffix)}."
        )
    if max_prompts is not None:
        prompts, records = prompts[:max_prompts], records[:max_prompts]
    return PromptSet(
        str(path),
        suffix.lstrip("."),
        chosen_field,
        prompts,
        records,
        len(entries),
        num_empty,
        hashlib.sha256(data).hexdigest(),
        num_available,
    )


def _format_description(suffix: str) -> str:
    return {
        ".txt": "one prompt per line",
        ".jsonl": f"one JSON object per line with a {'/'.join(PROMPT_FIELDS)} field",
        ".json": "a list of prompts or objects with a caption",
        ".csv": f"a header row with a {'/'.join(PROMPT_FIELDS)} column",
    }[suffix]


def load_geneval_metadata(path: str | os.PathLike) -> PromptSet:
    """GenEval's `evaluation_metadata.jsonl`: one JSON object per line, each with a `prompt` (and the tag, class and
    count fields GenEval's scorer reads back from the sample folders)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".jsonl":
        raise ValueError(
            f"{path}: GenEval's metadata is a .jsonl file (evaluation_metadata.jsonl), got "
            f"{path.suffix or 'no extension'!r}."
        )
    metadata = load_prompts(path, field="prompt")
    if metadata.num_empty_skipped:
        raise ValueError(
            f"{path} has {metadata.num_empty_skipped} empty lines or prompts; GenEval numbers its prompt "
            "folders by line, so remove them from the metadata file."
        )
    return metadata
