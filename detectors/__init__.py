"""Pure statistics for canary analysis (numpy/scipy only).

Detectors know nothing about phases, policies, Google or time: they take counts and histograms and
return verdicts as values (`detectors.verdict`).
"""
