"""Side effects: Cloud Run traffic changes, notifications, error-log capture, and dry-run variants.

Every outside system sits behind one narrow interface (`daemon.ports`); `daemon.bootstrap` picks the
real, sandbox or dry-run implementation.
"""
