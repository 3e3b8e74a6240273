"""Class sets of ``rloss annotate --classes``: ``voc``, ``acdc`` or a file of names, one a line."""

from __future__ import annotations

from pathlib import Path

MAX_CLASSES = 254
"""Class ids are 0..253: 254 (padding) and 255 (unlabeled) are reserved in label PNGs."""


def class_names(spec: str) -> list[str]:
    """The class names of ``spec``: ``voc`` (the 21 PASCAL VOC names), ``acdc`` (background, RV, Myo,
    LV) or the path of a text file with one name a line (blank lines skipped). ValueError naming
    ``--classes`` for a missing, unreadable or empty file, a repeated name or more than 254 names."""
    if spec == "voc":
        from rloss.data.constants import VOC_CLASSES

        return list(VOC_CLASSES)
    if spec == "acdc":
        from rloss.data.acdc import ACDC_CLASSES

        return list(ACDC_CLASSES)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--classes {spec}: no such file; expected voc, acdc or a text file of class names")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--classes {spec}: cannot read it ({error}); expected a UTF-8 text file") from error
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"--classes {spec}: lists no class name; expected one name a line")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"--classes {spec}: lists {len(names)} names; expected at most {MAX_CLASSES}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--classes {spec}: repeats {', '.join(repeated)}; expected each name once")
    return names
