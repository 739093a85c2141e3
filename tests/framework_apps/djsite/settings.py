"""Django settings for the framework tests (see ../README.md): the parts of
``startproject``'s settings this site uses; the database from the environment."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = ["shop"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "djsite.urls"
WSGI_APPLICATION = "djsite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["PG_HOST"],
        "PORT": os.environ["PG_PORT"],
        "USER": os.environ["PG_USER"],
        "NAME": os.environ["PG_DB"],
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
