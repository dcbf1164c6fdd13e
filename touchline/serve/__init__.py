"""Show the stored tables: the dashboard (``app``), the self-contained report (``report``) and
the Plotly figures both draw (``figures``). Serve reads stored tables only."""
