"""The import page (gateway.portal.bulk): a user administrator uploads a CSV file of their own
organisation's practitioners; the answer lists every problem with its line number (nothing made),
or the accounts made with their invitation codes, shown once (or, if asked, as a CSV download)."""

from __future__ import annotations

from flask import g, make_response, render_template, request

from gateway.portal import bulk
from gateway.portal.views import _admin_only, _app, _now, _rules, pages


def _page(status: int = 200, **values):
    return render_template("import.html", columns=bulk.COLUMNS, max_rows=bulk.MAX_ROWS,
                           max_kib=bulk.MAX_IMPORT_BYTES // 1024, max_field=bulk.MAX_FIELD, **values), status


@pages.route(bulk.IMPORT_PATH, methods=["GET", "POST"])
@_admin_only
def practitioners_import():
    if request.method == "GET":
        return _page()
    me = g.practitioner
    upload = request.files.get("file")
    data = upload.stream.read(bulk.MAX_IMPORT_BYTES + 1) if upload is not None else b""
    try:
        if upload is None or not upload.filename:
            raise bulk.ImportRefused(["choose a CSV file to import"])
        rows = bulk.parse(data, me.org_code, _rules())
        with _app()["engine"].begin() as conn:  # every account, or none
            result = bulk.apply(conn, _app()["trail"], me, rows, rules=_rules(), now=_now())
    except bulk.ImportRefused as refused:
        with _app()["engine"].begin() as conn:
            bulk.audit_refusal(conn, _app()["trail"], me, refused)
        status = 413 if len(data) > bulk.MAX_IMPORT_BYTES else 400
        shown = refused.problems[:bulk.SHOWN_PROBLEMS]
        return _page(status, problems=shown, more=len(refused.problems) - len(shown))
    if request.form.get("export") == "csv":
        answer = make_response(bulk.export(result))
        answer.headers["Content-Type"] = "text/csv; charset=utf-8"
        answer.headers["Content-Disposition"] = f'attachment; filename="invitations-{me.org_code}.csv"'
        return answer
    return _page(result=result)
