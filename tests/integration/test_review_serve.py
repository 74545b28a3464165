"""``ftexp review serve`` as a process: killed between two answers it loses nothing; two raters at once
write two files; a second server on one rater's file is refused. And the page in a real headless
browser (Debian's Chromium + chromedriver, driven by selenium): five outputs rated with the keyboard,
a reload resumes at the sixth, the file holds what was typed, no automated score in the page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.review import read_jsonl
from tests.helpers.review_serve import answer, auto_values, call, review_run

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def start(*args):
    """A server process and the URL it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ftexp.review", "serve", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"open (http://\S+)", line)
    if not m:
        proc.kill()
        pytest.fail(f"no URL printed: {line!r} {proc.stderr.read()}")
    return proc, m.group(1)


def stop(proc):
    proc.terminate()
    proc.wait(10)


def test_killed_between_two_answers_loses_nothing_and_resumes(tmp_path):
    run = review_run(tmp_path / "run", "m")
    proc, url = start(run, "--rater", "ann")
    try:
        assert call(url + "api/item/0", answer(1, 5, 4, "fine"))[0] == 200
        assert call(url + "api/item/1", answer(0, 2, 3))[0] == 200
    finally:
        proc.kill()  # no clean shutdown: SIGKILL between two answers
        proc.wait(10)
    rows = read_jsonl(run / "review" / "ratings-ann.jsonl")
    assert sorted((r["correctness"], r["helpfulness"], r["tone"], r["notes"]) for r in rows) == \
        [(0, 2, 3, None), (1, 5, 4, "fine")]
    proc, url = start(run, "--rater", "ann")  # the kernel dropped the lock with the process
    try:
        state = call(url + "api/state")[1]
        assert (state["n_rated"], state["resume_at"]) == (2, 2)
    finally:
        stop(proc)


def test_two_raters_at_once_write_two_files_and_a_second_server_is_refused(tmp_path):
    run = review_run(tmp_path / "run", "m")
    ann, ann_url = start(run, "--rater", "ann")
    bob, bob_url = start(run, "--rater", "bob")
    try:
        for i in range(3):
            assert call(f"{ann_url}api/item/{i}", answer(1, 5, 5))[0] == 200
            assert call(f"{bob_url}api/item/{i}", answer(0, 1, 2))[0] == 200
        again = subprocess.run([sys.executable, "-m", "ftexp.review", "serve", str(run), "--rater", "ann"],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        assert again.returncode == 1 and again.stderr.count("\n") == 1
        assert "ratings-ann.jsonl is open in another `ftexp review serve` (process" in again.stderr
    finally:
        stop(ann)
        stop(bob)
    a, b = (read_jsonl(run / "review" / f"ratings-{r}.jsonl") for r in ("ann", "bob"))
    assert len(a) == len(b) == 3 and {r["tone"] for r in a} == {5} and {r["tone"] for r in b} == {2}


# ------------------------------------------------------------------------------------ the browser


def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1280,800"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def progress(driver):
    return driver.find_element("id", "progress").text


def wait_for(driver, text, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if text in progress(driver):
            return
        time.sleep(0.05)
    pytest.fail(f"the page never showed {text!r}; it shows {progress(driver)!r}")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
                           "apt-get install chromium chromium-driver")
def test_a_rater_rates_five_with_the_keyboard_reloads_and_resumes_at_the_sixth(tmp_path):
    pytest.importorskip("selenium", reason="the test extra installs selenium")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    runs = [review_run(tmp_path / "small", "small"), review_run(tmp_path / "large", "large")]
    proc, url = start(*runs, "--rater", "ann")
    driver = browser(tmp_path)
    typed = [(1, 5, 4, ""), (0, 2, 3, "wrong dose"), (1, 4, 5, ""), (0, 1, 1, "rude"), (1, 3, 4, "")]
    try:
        driver.get(url)
        wait_for(driver, "1 of 18")
        shown = [call(f"{url}api/item/{i}")[1]["output"] for i in range(5)]
        assert driver.find_element("id", "output").text == shown[0]
        keys = ActionChains(driver)
        for c, h, t, note in typed:  # one burst, as a quick rater types: no waiting for the next output
            keys = keys.send_keys(f"{c}{h}{t}")
            if note:
                keys = keys.send_keys("n", note, Keys.ESCAPE)
            keys = keys.send_keys(Keys.ENTER)
        keys.perform()
        wait_for(driver, "6 of 18")
        ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()  # back: the fifth answer is still there
        wait_for(driver, "5 of 18 (rated)")
        on = [driver.find_element("css selector", f".field[data-name={f}] button.on").text
              for f in ("correctness", "helpfulness", "tone")]
        assert on == [str(v) for v in typed[4][:3]]
        driver.refresh()
        wait_for(driver, "6 of 18")
        assert "(rated)" not in progress(driver)
        page = driver.page_source
        shots = [tmp_path / "review-page-1280x800.png", tmp_path / "review-page-390x844.png",
                 tmp_path / "review-page-red-team-1280x800.png"]
        driver.save_screenshot(str(shots[0]))
        driver.set_window_size(390, 844)
        driver.save_screenshot(str(shots[1]))
        driver.set_window_size(1280, 800)
        red = next(i for i in range(5, 18) if call(f"{url}api/item/{i}")[1]["red_team"])
        ActionChains(driver).send_keys(*[Keys.ARROW_RIGHT] * (red - 5)).perform()  # skip ahead: flagged
        wait_for(driver, f"{red + 1} of 18")
        assert driver.find_element("id", "redteam").is_displayed()
        driver.save_screenshot(str(shots[2]))
        print("screenshots:", *shots)
    finally:
        driver.quit()
        stop(proc)
    got = {}
    for run in runs:
        path = run / "review" / "ratings-ann.jsonl"
        for r in (read_jsonl(path) if path.exists() else []):
            row = next(x for x in read_jsonl(run / "review" / "review.jsonl") if x["id"] == r["id"])
            got[row["output"]] = (r["correctness"], r["helpfulness"], r["tone"], r["notes"] or "")
    assert got == dict(zip(shown, typed))
    for value in auto_values(runs[0]) + auto_values(runs[1]):
        assert value not in page
    assert "auto_" not in page and all(s.stat().st_size > 10_000 for s in shots)
