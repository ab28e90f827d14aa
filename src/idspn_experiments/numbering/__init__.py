"""Class-specific numbering (Section 4.1, Appendix E.1 and F.1): Tables 2 and 4."""
