from tests.support.bundles import main_content, seed_request


async def test_seed_example_completes_against_the_stub(client, stub):
    response = await client.post("/api/v1/pipeline/execute", json=seed_request())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pipeline_state"] == "COMPLETED"
    assert main_content(body)["text"].startswith("STUB: Summarize in one sentence:")
    assert stub.stats()["total_calls"] == 1
