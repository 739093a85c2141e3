"""A Django project, made by ``django-admin startproject`` and never touching
tgreen, under tgreen-serve with two workers: the admin login (CSRF, sessions,
password hashing) and ORM views that block in ``time.sleep`` run side by side,
without ``DJANGO_ALLOW_ASYNC_UNSAFE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _serve_helpers import Serve

django = pytest.importorskip("django")
requests = pytest.importorskip("requests")

VIEWS = '''
import time
from django.contrib.auth.models import User
from django.http import JsonResponse
from django.urls import path


def slow_count(request):
    time.sleep(1)
    return JsonResponse({"users": User.objects.count()})


urlpatterns.append(path("slow-count/", slow_count))
'''


@pytest.fixture
def project(tmp_path):
    def manage(*args: str, **env: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args], cwd=tmp_path, check=True,
                       capture_output=True, env={**os.environ, **env}, timeout=120)

    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("ALLOWED_HOSTS = []", 'ALLOWED_HOSTS = ["*"]'))
    with open(tmp_path / "mysite" / "urls.py", "a") as urls:
        urls.write(VIEWS)
    manage("migrate", "-v0")
    manage("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com",
           DJANGO_SUPERUSER_PASSWORD="s3cret-pw")
    return tmp_path


def test_django_admin_login_and_blocking_orm_views_run_concurrently(project):
    env = {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    with Serve("mysite.wsgi:application", "--workers", "2", "--chdir", str(project), env=env) as srv:
        base = srv.url.rstrip("/")
        s = requests.Session()
        s.get(f"{base}/admin/login/", timeout=30).raise_for_status()
        r = s.post(f"{base}/admin/login/?next=/admin/",
                   data={"username": "admin", "password": "s3cret-pw", "next": "/admin/",
                         "csrfmiddlewaretoken": s.cookies["csrftoken"]},
                   headers={"Referer": f"{base}/admin/login/"}, timeout=30)
        assert r.status_code == 200 and r.url == f"{base}/admin/", (r.status_code, r.url)
        users = s.get(f"{base}/admin/auth/user/", timeout=30)
        assert users.status_code == 200 and "admin@example.com" in users.text

        t0 = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(
                lambda _: requests.get(f"{base}/slow-count/", timeout=30).json(), range(10)))
        elapsed = time.monotonic() - t0
    assert results == [{"users": 1}] * 10
    # Ten 1 s views: one after the other on two workers would take 5 s.
    assert elapsed < 4.0, elapsed
