"""Reads the hub's exports back with tools nobody on the project wrote and
prints what they see as JSON: openpyxl (PyPI) for xlsx, Python's csv module
for CSV (RFC 4180; a BOM would show up in the first header).

usage: read_export.py xlsx FILE | read_export.py csv FILE
"""
import csv
import datetime
import json
import sys

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter


def cell(c):
    v = c.value
    if isinstance(v, datetime.datetime):
        v = v.isoformat()
    return {"t": c.data_type, "v": v, "date": bool(c.is_date), "q": bool(c.quotePrefix),
            "fmt": c.number_format, "bold": bool(c.font and c.font.b)}


def xlsx(path):
    wb = load_workbook(path)
    out = []
    for ws in wb.worksheets:
        widths = {get_column_letter(i): ws.column_dimensions[get_column_letter(i)].width
                  for i in range(1, ws.max_column + 1)}
        out.append({
            "name": ws.title,
            "max_row": ws.max_row,
            "max_column": ws.max_column,
            "freeze_panes": ws.freeze_panes,
            "widths": widths,
            "rows": [[cell(c) for c in row] for row in ws.iter_rows()],
        })
    return out


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f, strict=True))


def main() -> int:
    kind, path = sys.argv[1], sys.argv[2]
    print(json.dumps(xlsx(path) if kind == "xlsx" else csv_rows(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
