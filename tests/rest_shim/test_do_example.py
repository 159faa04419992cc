from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio


async def test_example_echoes_message(proxy):
    response = await proxy.post("/v1/do/example/Example", json={"message": "hi"})
    assert response.status_code == 200
    assert response.json() == {
        "command_response": {
            "body": {
                "connector_response": "You passed the example connector: 'hi'. Have a good day!",
                "message": "hi",
            },
            "mimetype": "application/json",
            "http_status": 200,
            "headers": {},
        },
        "command_response_version": 2,
        "error": None,
        "spiff__logs": [],
    }
