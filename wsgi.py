"""WSGI entry point: ``flask run`` and ``gunicorn wsgi:app`` both find the app here."""
from dashboard import create_app

app = create_app()
