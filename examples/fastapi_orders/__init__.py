"""A FastAPI shop whose order rows and receipt jobs commit in one PostgreSQL transaction."""
