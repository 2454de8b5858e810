"""The shop application: orders, and the task that sends their receipts."""
