"""example_app with hsm change 1 (bench/ha_shared_function_list.py) applied: gunicorn target for
bench/ha_remote_tokens.py, measurement only."""

from ha_shared_function_list import share_function_list

share_function_list()

from example_app import create_app  # noqa: E402

app = create_app()
