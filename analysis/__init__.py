"""pandas analysis of fusewb captures: one function per question, each returning a DataFrame."""
