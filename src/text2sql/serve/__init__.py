"""``text2sql serve``: an HTTP API and a web page to ask a folder of SQLite databases.

:mod:`text2sql.serve.app` builds the FastAPI application (model, queue, runner);
``static/`` holds the page (plain HTML, CSS and JavaScript, no build step).
"""
