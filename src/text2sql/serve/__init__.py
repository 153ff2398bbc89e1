"""``text2sql serve``: an HTTP API and a web page to ask a folder of SQLite databases.

:mod:`text2sql.serve.app` builds the FastAPI application from a module per job (catalog,
batcher, answers, schemas, routes, openai_compat, errors, auth); ``static/`` holds the page
(plain HTML, CSS and JavaScript, no build step).
"""
