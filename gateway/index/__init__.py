"""The canonical index: child records, source-record links and involvements."""
