"""Random-multiset autoencoding (Section 4.2, Appendix E.2 and F.2): Tables 5 and 6, Figures 1-4."""
