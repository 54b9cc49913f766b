"""The web front end of the seed's architecture: a live task dashboard under ``/dashboard/``.

Server-rendered pages (list, detail, submit, overview) that work without JavaScript, and a little plain
JavaScript that follows the API's Server-Sent Events to update them live.
"""
