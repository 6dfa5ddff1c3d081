"""Stage 5: pictures and tables for people: qc.png, cohort statistics, report.html. Reads measures;
never read by them."""
