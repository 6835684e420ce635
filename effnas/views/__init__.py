"""Views above the stages: `effnas report` (report.py, a section module per stage) and
`effnas dashboard` (dashboard.py). They read run directories through their files and call the
stages' own results code (columns, statistics, figures); no stage imports a view."""
