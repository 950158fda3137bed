"""The console loads the browser verifier with Subresource Integrity: the hash in the page is the file's."""

import base64
import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "services/query_api/audit_query/static"


def test_the_verifier_script_is_pinned_by_its_sha384() -> None:
    page = (STATIC / "index.html").read_text()
    found = re.search(r'<script src="/static/verify.js" integrity="(sha384-[A-Za-z0-9+/=]+)"></script>', page)
    assert found, "index.html loads verify.js with an integrity attribute"
    digest = base64.b64encode(hashlib.sha384((STATIC / "verify.js").read_bytes()).digest()).decode()
    assert found.group(1) == f"sha384-{digest}", (
        "verify.js changed: put its new sha384 into index.html's integrity attribute"
    )
    assert page.index("verify.js") < page.index("app.js"), "the verifier loads before the console uses it"
