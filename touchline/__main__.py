"""``python -m touchline``: the same command as the ``touchline`` script."""

from touchline.cli import app

app(prog_name="touchline")
