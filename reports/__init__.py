"""HTML reports of benchmark runs and human ratings (`python -m bench.report`).

The report reads the files other stages wrote (DESIGN.md "Run directory", the human-evaluation
analysis CSVs) and lays them out; it computes no metric. Modules:

    rundata   read and check a run directory
    human     read (or produce, via rater.analyze) the human-evaluation tables
    tables    table records, number formatting, CSV output
    figures   matplotlib figures and image thumbnails as data URIs
    headline  results first: best config per metric, leaderboard of several runs
    sections  the provenance, COCO, DrawBench and image-grid sections
    calibration  the calibration-world section (calibration_world.checks files) and statement
    compare   side-by-side comparison of runs, with protocol checks
    build     assemble the sections into one self-contained HTML file
"""

class ReportInputError(Exception):
    """Bad input (not a run directory, a malformed file); the message names the file."""
