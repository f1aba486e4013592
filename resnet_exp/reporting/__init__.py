"""Stage 4, the reports: run folders -> numbers -> verdicts and figures -> HTML.

    results.py    reads run folders back (the one place reports' numbers are computed)
    paper.py      the paper's numbers we compare against
    plots.py      the paper's figure style
    notebook.py   what every notebook calls first (open_report) and its helpers
    build.py      executes the notebooks with papermill and writes the HTML and the index
"""
