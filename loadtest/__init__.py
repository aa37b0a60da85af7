"""Load generator and reports for slm-router; talks HTTP only (imports no other package here)."""
