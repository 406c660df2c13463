"""The server never reads its own disk on a caller's behalf: local paths and file:// URLs in document inputs are
refused with a 4xx problem, and no answer names a server-side path."""

import pytest

DOCUMENT_BUNDLE = '''domain = "docs"
main_pipe = "read"

[pipe.read]
type = "PipeLLM"
description = "Read a document"
inputs = { doc = "Document" }
output = "Text"
prompt = """
Summarize this document:
@doc
"""
'''


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "../../../etc/passwd", "file://localhost/etc/hostname"])
@pytest.mark.parametrize("dry_run", [False, True])
async def test_local_paths_and_file_urls_are_refused(client, stub, url, dry_run):
    inputs = {"doc": {"concept": "Document", "content": {"url": url}}}
    body = {"mthds_contents": [DOCUMENT_BUNDLE], "inputs": inputs, "dry_run": dry_run}
    response = await client.post("/api/v1/pipeline/execute", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "security.input_url_refused"
    assert "'doc'" in problem["detail"]
    assert "root:x:" not in response.text
    assert stub.stats()["total_calls"] == 0
