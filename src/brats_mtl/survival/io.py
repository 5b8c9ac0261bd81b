"""Reading BraTS survival tables and writing survival results.

The BraTS survival CSVs changed their column names from year to year and hold hand-typed
values. :func:`read_survival_csv` reads all of them into one :class:`SurvivalTable` with
fixed column names and units:

============  ===================================================================
column        meaning
============  ===================================================================
case_id       str, the case ID as written (the case folder name, e.g. BraTS19_CBICA_AAB_1)
age_years     float, NaN when missing or bad
survival_days float, NaN when missing or bad; the follow-up days for censored rows
censored      bool, True for ``ALIVE (361 days later)``: alive at last follow-up
resection     str, ``"GTR"``, ``"STR"`` or ``"NA"``
line          int, line of the row in the file (the header is line 1)
============  ===================================================================

Column names looked for (case, spaces and underscores ignored):

- ID: ``BraTS18ID``, ``BraTS19ID``, ``Brats20ID``, ``BraTS20ID`` (any ``BraTS<year>ID``),
  ``ID``, ``SubjectID``;
- age: ``Age`` (required by default; a truth table read only for scoring needs none, see
  ``require``);
- survival: ``Survival``, ``Survival_days`` (absent in validation tables);
- resection: ``ResectionStatus``, ``Extent_of_Resection`` (absent in the 2017 table).

Value rules:

- ``NA``, ``N/A``, ``NaN``, ``None``, ``null`` and empty cells are missing values, not errors.
  A row with a missing age stays in the table but cannot be fitted or predicted; when the
  age is needed (the default ``require``) one WARNING lists every such case ID (the real
  BraTS 2019 table has 19 rows with ``NA`` age, survival and resection);
- ages are integers or decimals (``60``, ``60.4630137``) in [0, 120] years. Any other age
  (``abc``, ``-3``, ``150``) is an **error**, strict or not: :class:`SurvivalTableError`
  lists every such row (line, case ID, value) and names the file. A wrong age would move
  the fitted line, so it is fixed in the file (or emptied) rather than skipped;
- the remaining bad values below are reported with their line number in
  :attr:`SurvivalTable.warnings` and logged, and the value becomes missing; ``strict=True``
  raises instead:
- survival is a number of days >= 0; ``ALIVE (361 days later)`` is a censored row with
  ``survival_days`` 361 and ``censored`` True; negative or other text is a bad value;
- resection is ``GTR`` or ``STR`` (any case); missing is ``"NA"``; other text is a bad value
  and becomes ``"NA"``;
- a row without ID, a repeated ID, or a row with more fields than the header is skipped;
- extra columns are ignored; blank lines are skipped.

Source: docs/design.md section 7; the BraTS 2018-2020 training and validation survival tables.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brats_mtl.atomic import write_text_atomic

logger = logging.getLogger(__name__)

#: Lower-case tokens read as a missing value.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null"})
#: Plausible ages in years; values outside are reported as bad.
AGE_RANGE_YEARS = (0.0, 120.0)
#: Resection statuses of the BraTS tables (gross / subtotal resection).
RESECTION_VALUES = ("GTR", "STR")

#: Columns a table must have unless the reader asks otherwise: fitting and predicting need
#: the age; scoring predictions needs ``("case_id", "survival")`` only.
DEFAULT_REQUIRED_COLUMNS: tuple[str, ...] = ("case_id", "age")

#: Column names looked for, per role (compared after :func:`_normalise_name`).
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "case_id": ("BraTS18ID", "BraTS19ID", "Brats20ID", "BraTS20ID", "BraTS21ID", "ID", "SubjectID"),
    "age": ("Age",),
    "survival": ("Survival", "Survival_days"),
    "resection": ("ResectionStatus", "Extent_of_Resection"),
}
_ANY_YEAR_ID = re.compile(r"^brats\d{0,4}id$")
_ALIVE = re.compile(r"^alive\b(?:\D*?(\d+(?:\.\d+)?)\s*days?\b)?", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class SurvivalTableError(ValueError):
    """A survival table cannot be read or holds bad values (with ``strict=True``)."""


@dataclass(frozen=True)
class SurvivalTable:
    """One BraTS survival table in fixed names and units (see the module docstring).

    Attributes:
        path: the file read.
        sha256: hex SHA-256 of the file's bytes.
        rows: one row per kept table row; columns ``case_id`` (str), ``age_years``
            (float64), ``survival_days`` (float64), ``censored`` (bool), ``resection``
            (str), ``line`` (int64), in file order.
        columns: role (``case_id``, ``age``, ``survival``, ``resection``) -> the column
            name found in the file, or None when the file has no such column.
        warnings: one message per bad value or skipped row, each naming the file and line.
    """

    path: Path
    sha256: str
    rows: pd.DataFrame
    columns: dict[str, str | None]
    warnings: tuple[str, ...] = ()

    @property
    def has_survival(self) -> bool:
        """True for training tables (a survival column exists)."""
        return self.columns.get("survival") is not None

    @property
    def has_age(self) -> bool:
        """True when the table has an age column (needed to fit and to predict)."""
        return self.columns.get("age") is not None

    @property
    def missing_age_ids(self) -> tuple[str, ...]:
        """Case IDs of the rows whose age is missing (empty or NA), in file order."""
        return tuple(str(c) for c in self.rows.loc[self.rows["age_years"].isna(), "case_id"])

    @property
    def has_resection(self) -> bool:
        """True when the table has a resection column."""
        return self.columns.get("resection") is not None

    def usable_rows(self, *, gtr_only: bool = True, include_censored: bool = False) -> pd.DataFrame:
        """Rows with a known age and survival, as used for fitting and scoring.

        Args:
            gtr_only: keep only rows whose resection is ``GTR`` (paper 4.3).
            include_censored: also keep censored rows (``ALIVE (...)``), with their
                follow-up days as if they were survival days. Off by default: those
                patients lived longer than the number says.

        Returns:
            A copy of :attr:`rows` restricted as asked, in file order.
        """
        keep = self.rows["age_years"].notna() & self.rows["survival_days"].notna()
        if not include_censored:
            keep &= ~self.rows["censored"]
        if gtr_only:
            keep &= self.rows["resection"] == "GTR"
        return self.rows.loc[keep].reset_index(drop=True)

    def describe(self) -> str:
        """One line of counts, for logs and CLI summaries."""
        r = self.rows
        parts = [f"{len(r)} rows", f"{int((r['resection'] == 'GTR').sum())} GTR"]
        if self.has_survival:
            parts.append(
                f"{int(r['survival_days'].notna().sum() - r['censored'].sum())} with survival"
            )
            parts.append(f"{int(r['censored'].sum())} censored")
        parts.append(f"{int(r['age_years'].isna().sum())} without age")
        parts.append(f"{len(self.warnings)} bad values")
        return f"{self.path.name}: " + ", ".join(parts)


def read_survival_csv(
    path: str | Path,
    *,
    strict: bool = False,
    require: Sequence[str] = DEFAULT_REQUIRED_COLUMNS,
) -> SurvivalTable:
    """Read a BraTS survival table (training or validation, 2017-2020 column names).

    Args:
        path: CSV file, comma separated, header on the first line (UTF-8, BOM allowed).
        strict: raise if any value is bad, instead of collecting warnings.
        require: roles of :data:`COLUMN_NAMES` the file must have (the ID always is). The
            default (ID and age) suits fitting and predicting; a truth table for scoring
            needs ``("case_id", "survival")``. A role that is absent and not required reads as
            missing values (NaN age, NaN survival, resection ``"NA"``).

    Returns:
        The :class:`SurvivalTable`; bad survival or resection values and skipped rows
        become missing and are listed in ``warnings`` (also logged at WARNING level).
        Missing ages are logged once, as one WARNING listing the case IDs, when the age is
        required.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        SurvivalTableError: if the file is empty or not text, if a ``require``d column is
            missing (the message lists the names looked for and the names found), if any
            age is not a number of years in [0, 120] (the message lists each such line,
            case ID and value), or, with ``strict=True``, if any other value is bad (the
            message lists every bad line).
        ValueError: if ``require`` names an unknown role.

    Source: docs/design.md section 7 (column names and values of the BraTS tables).
    """
    unknown = sorted(set(require) - set(COLUMN_NAMES))
    if unknown:
        raise ValueError(f"unknown column roles {unknown}; choose from {sorted(COLUMN_NAMES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"survival table {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SurvivalTableError(f"{path}: not a UTF-8 text file ({err})") from None
    if not text.strip():
        raise SurvivalTableError(f"{path}: the file is empty; expected a CSV with a header line")

    # Read every line as strings, with enough columns for the widest line, so that a row
    # with extra fields is seen (not silently cut) and frame index i is file line i + 1.
    n_fields = max(line.count(",") for line in text.splitlines()) + 1
    try:
        raw = pd.read_csv(
            io.StringIO(text),
            header=None,
            names=list(range(n_fields)),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        ).fillna("")
    except (pd.errors.ParserError, ValueError) as err:
        raise SurvivalTableError(f"{path}: not a readable CSV file ({err})") from None

    header = [str(v).strip() for v in raw.iloc[0]]
    while header and header[-1] == "":
        header.pop()
    columns = _find_columns(header, path, {"case_id", *require})
    warnings: list[str] = []
    bad_ages: list[str] = []
    records = []
    seen: dict[str, int] = {}
    for index in range(1, len(raw)):
        line = index + 1
        values = [str(v).strip() for v in raw.iloc[index]]
        if not any(values):
            continue  # blank line
        extra = [v for k, v in enumerate(values) if v and (k >= len(header) or not header[k])]
        if extra:
            warnings.append(
                f"{path}, line {line}: {len(header) + len(extra)} fields but the header has "
                f"{len(header)}; row skipped"
            )
            continue
        cell = {
            role: (values[header.index(name)] if name else "") for role, name in columns.items()
        }
        case_id = cell["case_id"]
        if case_id.lower() in MISSING_TOKENS:
            warnings.append(f"{path}, line {line}: no case ID; row skipped")
            continue
        key = id_key(case_id)
        if key in seen:
            warnings.append(
                f"{path}, line {line}: case ID {case_id!r} repeats line {seen[key]}; row skipped"
            )
            continue
        seen[key] = line
        age, problem = _parse_age(cell["age"])
        if problem:
            bad_ages.append(f"  line {line} ({case_id}): {problem}")
        days, censored, problem = _parse_survival(cell["survival"])
        if problem:
            warnings.append(
                f"{path}, line {line} ({case_id}): {problem}; survival treated as missing"
            )
        resection, problem = _parse_resection(cell["resection"])
        if problem:
            warnings.append(f"{path}, line {line} ({case_id}): {problem}; resection set to NA")
        records.append((case_id, age, days, censored, resection, line))

    rows = pd.DataFrame.from_records(
        records,
        columns=["case_id", "age_years", "survival_days", "censored", "resection", "line"],
    ).astype(
        {
            "case_id": str,
            "age_years": np.float64,
            "survival_days": np.float64,
            "censored": bool,
            "resection": str,
            "line": np.int64,
        }
    )
    if bad_ages:
        low, high = AGE_RANGE_YEARS
        raise SurvivalTableError(
            f"{path}: {len(bad_ages)} row(s) with an age that is not a number of years in "
            f"[{low:g}, {high:g}]; correct these cells, or empty them (or write NA) to leave "
            "the rows out:\n" + "\n".join(bad_ages)
        )
    if strict and warnings:
        raise SurvivalTableError(
            f"{path}: {len(warnings)} bad values (strict mode); fix them or read without "
            "strict to skip them:\n" + "\n".join(warnings)
        )
    for message in warnings:
        logger.warning(message)
    # GTR selection needs age, survival and resection; a scoring-only table needs none
    if columns["survival"] and columns["age"] and columns["resection"] is None:
        logger.warning(
            "%s: no resection column (looked for %s); every row counts as NA",
            path,
            ", ".join(COLUMN_NAMES["resection"]),
        )
    table = SurvivalTable(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        rows=rows,
        columns=columns,
        warnings=tuple(warnings),
    )
    missing = table.missing_age_ids
    if "age" in require and missing:
        logger.warning(
            "%s: %d row(s) without age (empty or NA) are left out of fitting and prediction: %s",
            path,
            len(missing),
            ", ".join(missing),
        )
    logger.debug("%s", table.describe())
    return table


def _normalise_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _find_columns(header: list[str], path: Path, require: set[str]) -> dict[str, str | None]:
    """Role -> header name (None when absent), for the roles in :data:`COLUMN_NAMES`."""
    normalised = {_normalise_name(h): h for h in reversed(header) if h}
    found: dict[str, str | None] = {}
    for role, names in COLUMN_NAMES.items():
        hit = next(
            (normalised[_normalise_name(n)] for n in names if _normalise_name(n) in normalised),
            None,
        )
        if hit is None and role == "case_id":
            hit = next((h for h in header if _ANY_YEAR_ID.match(_normalise_name(h))), None)
        found[role] = hit
    for role in COLUMN_NAMES:
        if role in require and found[role] is None:
            hint = (
                " The file looks semicolon-separated; save it comma-separated."
                if len(header) == 1 and ";" in header[0]
                else " Rename the column."
            )
            raise SurvivalTableError(
                f"{path}: no {role.replace('_', ' ')} column; looked for "
                f"{', '.join(COLUMN_NAMES[role])} (case, spaces and underscores ignored) "
                f"but the header has {', '.join(header) or 'no names'}.{hint}"
            )
    return found


def _parse_number(text: str) -> float | None:
    return float(text) if _NUMBER.match(text) else None


def _parse_age(text: str) -> tuple[float, str | None]:
    """(age in years or NaN, problem or None)."""
    if text.lower() in MISSING_TOKENS:
        return math.nan, None
    value = _parse_number(text)
    if value is None:
        return math.nan, f"age {text!r} is not a number"
    low, high = AGE_RANGE_YEARS
    if not low <= value <= high:
        return math.nan, f"age {text!r} is outside [{low:g}, {high:g}] years"
    return value, None


def _parse_survival(text: str) -> tuple[float, bool, str | None]:
    """(days or NaN, censored, problem or None)."""
    if text.lower() in MISSING_TOKENS:
        return math.nan, False, None
    value = _parse_number(text)
    if value is not None:
        if value < 0:
            return math.nan, False, f"survival {text!r} is negative"
        return value, False, None
    alive = _ALIVE.match(text)
    if alive:
        return (float(alive.group(1)) if alive.group(1) else math.nan), True, None
    return math.nan, False, f"survival {text!r} is neither days nor 'ALIVE (N days later)'"


def _parse_resection(text: str) -> tuple[str, str | None]:
    """("GTR" | "STR" | "NA", problem or None)."""
    if text.lower() in MISSING_TOKENS:
        return "NA", None
    if text.upper() in RESECTION_VALUES:
        return text.upper(), None
    return "NA", f"resection {text!r} is not GTR, STR or NA"


def id_key(case_id: str) -> str:
    """Key used to match case IDs between tables and case folders: stripped, case folded.

    ``Brats18_2013_2_1`` and ``BraTS18_2013_2_1`` (both spellings occur in BraTS folders)
    match.
    """
    return str(case_id).strip().casefold()


# ---------------------------------------------------------------------------------------
# Writing


def write_submission(
    predictions: pd.DataFrame,
    path: str | Path,
    *,
    header: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write predictions in the BraTS survival submission format.

    The format is two comma-separated columns, the case ID and the predicted survival in
    days, one case a line. The BraTS 2018-2020 upload instructions asked for a file without
    a header line, so none is written by default; ``header=True`` writes ``ID,days`` first
    (:func:`read_predictions` reads both). Days are written with 2 decimals.

    Args:
        predictions: columns ``case_id`` (str) and ``predicted_days`` (float).
        path: output CSV.
        header: write an ``ID,days`` header line.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    lines = ["ID,days"] if header else []
    lines += [
        f"{cid},{days:.2f}"
        for cid, days in zip(predictions["case_id"], predictions["predicted_days"], strict=True)
    ]
    return write_text_atomic(path, "\n".join(lines) + "\n", overwrite=overwrite)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a survival submission CSV written by :func:`write_submission` (or by hand).

    Two columns, ID and days; a header line is detected (its second field is not a
    number) and skipped. Unlike training tables, a prediction file is machine-made, so any
    bad line is an error.

    Returns:
        DataFrame with ``case_id`` (str), ``predicted_days`` (float64), ``line`` (int64).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        SurvivalTableError: on a line without exactly two fields, a non-numeric or missing
            day count, a repeated ID, or no prediction at all (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    n_fields = max((line.count(",") for line in text.splitlines()), default=0) + 1
    raw = pd.read_csv(
        io.StringIO(text),
        header=None,
        names=list(range(n_fields)),
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
    ).fillna("")
    records = []
    seen: dict[str, int] = {}
    first = True
    for index in range(len(raw)):
        line = index + 1
        values = [str(v).strip() for v in raw.iloc[index]]
        if not any(values):
            continue
        is_first, first = first, False
        filled = [v for v in values if v]
        if len(filled) != 2 or not values[0]:
            raise SurvivalTableError(
                f"{path}, line {line}: expected 2 fields (ID, days), got {len(filled)}"
            )
        case_id, days_text = values[0], values[1]
        days = _parse_number(days_text)
        if days is None:
            if is_first:  # a header line such as "ID,days"
                continue
            raise SurvivalTableError(f"{path}, line {line}: days {days_text!r} is not a number")
        key = id_key(case_id)
        if key in seen:
            raise SurvivalTableError(
                f"{path}, line {line}: case ID {case_id!r} repeats line {seen[key]}"
            )
        seen[key] = line
        records.append((case_id, days, line))
    if not records:
        raise SurvivalTableError(f"{path}: no prediction lines (expected 'ID,days' rows)")
    return pd.DataFrame.from_records(records, columns=["case_id", "predicted_days", "line"]).astype(
        {"case_id": str, "predicted_days": np.float64, "line": np.int64}
    )
