"""Show the stored tables: the dashboard (``app``), the self-contained report (``report``) and
the Plotly figures both draw (``figures``). Serve reads stored tables only."""

#: where ``touchline dashboard`` listens: this machine only, on a port of its own (the
#: collector's is 8080)
HOST_DEFAULT = "127.0.0.1"
PORT_DEFAULT = 8050
