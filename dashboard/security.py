"""Response headers: a strict Content-Security-Policy (no inline script), and friends."""
from flask import abort, request

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def register(app):
    @app.before_request
    def refuse_what_no_form_sends():
        """A NUL character (PostgreSQL cannot store one, no keyboard types one) or a file (no
        form takes one) is refused before any view reads it."""
        values = [request.path]
        for key, items in list(request.args.lists()) + list(request.form.lists()):
            values.append(key)
            values.extend(items)
        if any("\x00" in value for value in values):
            abort(400, "What you sent contains a NUL character; nothing was saved.")
        if request.files:
            abort(400, "This form does not take files; nothing was saved.")

    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.endpoint and request.endpoint != "static":
            # Pages hold operational data: never cache them in shared caches.
            headers.setdefault("Cache-Control", "no-store")
        return response
