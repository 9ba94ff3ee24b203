"""A real browser (Debian's headless Chromium through chromedriver) uses the web page: upload an image, restore it,
see the restored image. RESTORE_NB_SCREENSHOT=path saves the page (the docs' screenshot)."""

import os, shutil, socket, threading, time
from pathlib import Path

import pytest
import torch

from restore_nb.core import sample_images, save_image
from restore_nb.serve import create_app

CHROMIUM, DRIVER = shutil.which('chromium') or shutil.which('chromium-browser'), shutil.which('chromedriver')


@pytest.fixture
def live_server(tmp_path):
    import uvicorn

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(root=str(tmp_path / 'root')), host='127.0.0.1', port=port, log_level='warning')
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    yield f'http://127.0.0.1:{port}'
    server.should_exit = True
    t.join(30)


@pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Chromium and chromedriver are not installed: the project's setup "
    "installs Debian's chromium and chromium-driver (make system-deps); this machine has neither",
)
def test_the_web_page_restores_an_uploaded_image(live_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    img = tmp_path / 'noisy.png'
    x = sample_images('astronaut', 96)['astronaut']
    save_image((x + 25 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), img)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1100,900'):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(live_server + '/')
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, 'task').get_attribute('value') == 'denoise')
        driver.find_element(By.ID, 'file').send_keys(str(img))
        driver.find_element(By.CSS_SELECTOR, '[data-opt="sigma"]').send_keys('25')
        driver.find_element(By.ID, 'run').click()
        wait.until(lambda d: d.find_element(By.ID, 'status').text == 'Restored.' or d.find_element(By.ID, 'error').text)
        assert driver.find_element(By.ID, 'error').text == ''
        after = driver.find_element(By.ID, 'after')
        assert after.get_attribute('src').startswith('data:image/png;base64,')
        assert driver.execute_script('return arguments[0].complete && arguments[0].naturalWidth', after) == 96
        assert 'denoise-rgb' in driver.find_element(By.ID, 'facts').text
        if out := os.environ.get('RESTORE_NB_SCREENSHOT'):
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(out)
        driver.get(live_server + '/dashboard')                            # the monitoring page saw the request
        wait.until(lambda d: 'denoise-rgb' in d.find_element(By.ID, 'rows').text)
        assert 'denoise' in driver.find_element(By.ID, 'rows').text
    finally:
        driver.quit()
