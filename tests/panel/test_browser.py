"""The panel in a real browser: headless Debian chromium + chromedriver through Selenium, against
`rupost panel serve` (gunicorn, TLS) on the test node. Screenshots of the main pages are saved under
$RUPOST_TEST_ARTIFACTS/panel (default /tmp/rupost-artifacts/panel) and checked."""
from __future__ import annotations

import os
import shutil
import struct
import time
import uuid
import zlib
from pathlib import Path

import pytest

from .conftest import PASSWORD

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("RUPOST_TEST_ARTIFACTS", "/tmp/rupost-artifacts")) / "panel"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "chromium and chromium-driver are installed by scripts/install-deps --test"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--ignore-certificate-errors", "--window-size=1366,1000", "--lang=ru"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def png_check(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking it is not blank: its pixels take many values."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert width > 600 and height > 400
    assert len(set(pixels[: 4 * 1024 * 1024])) > 32, f"{path} looks blank"
    return width, height


def click_and_wait(driver, by: str, value: str) -> None:
    """Click something that loads a new page, and wait until the new page has loaded.
    The element is looked up again if the page was still settling (Chromium then reports a
    node that "does not belong to the document")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def detached(exc: Exception) -> bool:
        return isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc)

    def replaced(_driver) -> bool:  # selenium's staleness_of, also for Chromium's other wording
        try:
            old.is_enabled()
            return False
        except WebDriverException as exc:
            if detached(exc):
                return True
            raise

    for attempt in range(3):
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        old = driver.find_element("tag name", "html")
        try:
            driver.find_element(by, value).click()
            break
        except WebDriverException as exc:
            if not detached(exc) or attempt == 2:
                raise
    WebDriverWait(driver, 60).until(replaced)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def shot(driver, name: str, *expected: str) -> str:
    body = driver.find_element("tag name", "body").text
    for text in expected:
        assert text in body, f"{name}: {text!r} not on the page:\n{body[:1500]}"
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    png_check(path)
    return body


def test_login_domain_mailbox_plan_deploy_dashboard(browser, served, admin_factory, node):
    from selenium.webdriver.common.by import By

    base = f"https://127.0.0.1:{served}"
    login = admin_factory("superadmin")
    browser.get(f"{base}/login")
    shot(browser, "01-login", "Панель управления RuPost", "Войти")
    browser.find_element(By.ID, "login").send_keys(login)
    browser.find_element(By.ID, "password").send_keys("wrong-password")
    click_and_wait(browser, By.ID, "submit")
    assert "Неверное имя, пароль или код" in browser.find_element(By.TAG_NAME, "body").text
    browser.find_element(By.ID, "login").clear()
    browser.find_element(By.ID, "login").send_keys(login)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    click_and_wait(browser, By.ID, "submit")
    shot(browser, "02-dashboard", "Обзор", "node1", "Сертификаты", "Последние развёртывания", "Почтовые очереди",
         "Почтовое хранилище", "Использование квот")

    domain = f"b{uuid.uuid4().hex[:8]}.test"
    browser.get(f"{base}/domains/")
    browser.find_element(By.ID, "domain-name").send_keys(domain)
    browser.find_element(By.ID, "domain-description").send_keys("<b>browser</b> test")
    click_and_wait(browser, By.ID, "domain-add")
    shot(browser, "03-domains", "Домен добавлен", domain, "<b>browser</b> test")
    assert domain in [d["name"] for d in node.app.domains.list()]

    browser.get(f"{base}/mailboxes/")
    browser.find_element(By.ID, "mailbox-address").send_keys(f"anna@{domain}")
    browser.find_element(By.ID, "mailbox-name").send_keys("Анна Иванова")
    browser.find_element(By.ID, "mailbox-password").send_keys("browser-pass-1")
    browser.find_element(By.ID, "mailbox-password2").send_keys("browser-pass-1")
    quota = browser.find_element(By.ID, "mailbox-quota")
    quota.clear()
    quota.send_keys("1G")
    click_and_wait(browser, By.ID, "mailbox-add")
    shot(browser, "04-mailbox", "Почтовый ящик создан", f"anna@{domain}", "Анна Иванова", "1 GiB")
    assert node.app.mailboxes.show(f"anna@{domain}")["quota_bytes"] == 1024 ** 3
    browser.get(f"{base}/mailboxes/?q=anna&domain={domain}")
    shot(browser, "05-mailboxes", f"anna@{domain}")

    browser.get(f"{base}/templates/")
    shot(browser, "06-templates", "Шаблоны и развёртывание", "standard")
    click_and_wait(browser, By.ID, "plan-link")
    shot(browser, "07-plan", "План")
    click_and_wait(browser, By.XPATH, "//button[text()='Развернуть']")
    for _ in range(300):  # the job page refreshes itself every 2 s while the deploy runs
        if browser.find_elements(By.ID, "job-result") or browser.find_elements(By.ID, "job-error"):
            break
        time.sleep(1)
    body = shot(browser, "08-deploy-job", "выполнено")
    assert "unchanged" in body or "applied" in body

    for name, path, text in [("09-nodes", "/nodes/", "node1"), ("10-certificates", "/certificates/",
                                                                "rupost-control-panel-builtin"),
                             ("11-audit", f"/audit/?target={domain}", "domain.add"),
                             ("12-admins", "/admins/", login), ("13-settings", "/settings/", "Настройки"),
                             ("14-aliases", "/aliases/", "Псевдонимы"),
                             ("16-directories", "/directories/", "LDAP-фильтры")]:
        browser.get(base + path)
        shot(browser, name, text)
    directory = f"b{uuid.uuid4().hex[:6]}"  # the edit page of an LDAP domain (added without a connection check)
    node.app.directories.add(directory, "ad", ["ldaps://dc1.corp.test"], "ou=Users,dc=corp,dc=test",
                             "cn=rupost,dc=corp,dc=test", "browser-secret", check=False)
    try:
        browser.get(f"{base}/directories/{directory}/edit")
        shot(browser, "17-directory-edit", "Удалить этот LDAP-домен", f"LDAP-домен {directory}")
        browser.get(f"{base}/admins/#ldap-admins")  # scrolled to the section
        shot(browser, "18-ldap-admins", "Администраторы из LDAP", directory)
    finally:
        node.app.directories.remove(directory, force=True)

    click_and_wait(browser, By.XPATH, "//button[text()='English']")
    browser.get(f"{base}/")
    shot(browser, "15-dashboard-en", "Dashboard", "Certificates", "Last deploys")
    click_and_wait(browser, By.ID, "logout")
    assert "/login" in browser.current_url
