"""`contactgate serve` options (gateway/cli/serve.py) refused before anything starts."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("service_url", [None, "https://gateway.example.org:8443/\"><x",
                                         "https://user@gateway.example.org:8443", "https://gateway.example.org:99999"])
def test_metadata_bind_without_a_valid_service_url_is_refused_before_anything_starts(service_url, tmp_path):
    from tests.gateway.cli_runner import contactgate

    args = ["serve", "--bind", "192.0.2.1:9", "--metadata-bind", "192.0.2.1:10"]
    run = contactgate(*args, *([] if service_url is None else ["--service-url", service_url]), cwd=tmp_path)
    run.assert_clean_failure(2, "--service-url")
