//! The Windows packaging files agree with each other and with the package:
//! the INF template names the binary the package builds, the service KMDF
//! binds to, a `.Wdf` section stampinf fills, the hardware id devgen uses,
//! and the SDDL that admits only SYSTEM and Administrators; the cargo-make
//! flow maps `driver.inx` onto the INF name wdk-build expects.

use std::fs;

fn read(path: &str) -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The binary name cargo gives the package (`ksspi-driver` -> `ksspi_driver`).
fn binary() -> String {
    env!("CARGO_PKG_NAME").replace('-', "_")
}

/// An INF comment starts at a `;` outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn sections(inf: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in inf.lines() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.to_string(), Vec::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push(line.to_string());
        }
    }
    out
}

fn section<'a>(s: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    &s.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no [{name}] section"))
        .1
}

/// The minimum Windows build, as `Cargo.toml` states it once.
fn minimum_build() -> u32 {
    let cargo = read("Cargo.toml");
    let line = cargo
        .lines()
        .find(|l| l.starts_with("minimum-build = "))
        .expect("minimum-build in [workspace.metadata.ksspi.windows]");
    line["minimum-build = ".len()..]
        .trim()
        .parse()
        .expect("a build number")
}

/// The minimum Windows, in words, as `Cargo.toml` states it.
fn minimum_words() -> String {
    let cargo = read("Cargo.toml");
    let line = cargo
        .lines()
        .find(|l| l.starts_with("minimum = "))
        .expect("minimum in [workspace.metadata.ksspi.windows]");
    line.split('"').nth(1).expect("a quoted string").to_string()
}

#[test]
fn the_supported_windows_range_is_stated_once_and_agreed_on() {
    let build = minimum_build();
    let words = minimum_words();
    // KMDF 1.33 runs on Windows Server 2022 (20348) / Windows 11 21H2 (22000)
    // and later; the target KMDF version and the minimum build go together.
    let cargo = read("Cargo.toml");
    assert!(cargo.contains("target-kmdf-version-minor = 33"));
    assert_eq!(build, 20348, "KMDF 1.33's lowest system is build 20348");
    assert!(words.contains(&build.to_string()), "{words}");
    // The INF offers the driver from that build on, and no lower.
    let inf = read("driver.inx");
    let decorations: Vec<&str> = inf
        .match_indices("NT$ARCH$.10.0...")
        .map(|(i, m)| {
            let rest = &inf[i + m.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    assert!(!decorations.is_empty());
    for d in decorations {
        assert_eq!(d, build.to_string(), "driver.inx's decoration");
    }
    // The user-facing pages say the same words.
    for doc in ["README.md", "docs/WINDOWS.md"] {
        assert!(
            read(doc).contains(&words),
            "{doc} states the supported range as Cargo.toml does: {words}"
        );
    }
}

#[test]
fn the_inf_template_describes_this_package() {
    let inf = read("driver.inx");
    let s = sections(&inf);
    let sys = format!("{}.sys", binary());
    assert!(section(&s, "SourceDisksFiles")
        .iter()
        .any(|l| l.starts_with(&sys)));
    assert!(section(&s, "KSSPI_Files").contains(&sys));
    let service = section(&s, "KSSPI_Device.NT$ARCH$.Services").join("\n");
    assert!(
        service.contains(&format!("AddService = {}", binary())),
        "{service}"
    );
    assert!(section(&s, "KSSPI_Service")
        .iter()
        .any(|l| l.ends_with(&format!("%13%\\{sys}"))));
    let wdf = section(&s, "KSSPI_Device.NT$ARCH$.Wdf").join("\n");
    assert!(
        wdf.contains(&format!("KmdfService = {}, KSSPI_WdfSection", binary())),
        "{wdf}"
    );
    assert!(
        section(&s, "KSSPI_WdfSection").contains(&"KmdfLibraryVersion = $KMDFVERSION$".to_string())
    );
    let build = minimum_build();
    assert!(section(&s, &format!("Standard.NT$ARCH$.10.0...{build}"))
        .iter()
        .any(|l| l.ends_with("Root\\ksspi")));
    assert!(section(&s, "KSSPI_Security")
        .iter()
        .any(|l| l.contains("\"D:P(A;;GA;;;SY)(A;;GA;;;BA)\"")));
    assert!(section(&s, "Version")
        .iter()
        .any(|l| l == &format!("CatalogFile = {}.cat", binary())));
}

#[test]
fn the_packaging_flow_maps_driver_inx_and_pins_wdk_build() {
    let make = read("Makefile.toml");
    assert!(make.contains("load_rust_driver_makefile"));
    assert!(make.contains("[tasks.copy-inx-to-output]"));
    assert!(
        make.contains("driver.inx ${WDK_BUILD_OUTPUT_DIRECTORY}/${CARGO_MAKE_CRATE_FS_NAME}.inf")
    );
    let cargo = read("Cargo.toml");
    let pinned = cargo
        .lines()
        .find(|l| l.starts_with("wdk-build = "))
        .expect("wdk-build in [workspace.dependencies]");
    let version = pinned.split('"').nth(1).unwrap();
    assert!(
        make.contains(&format!("wdk-build = \"{version}\"")),
        "Makefile.toml loads wdk-build {version}"
    );
    assert!(cargo.contains("driver-type = \"KMDF\""));
    assert!(
        cargo.contains("kmdf-version-major = 1")
            && cargo.contains("target-kmdf-version-minor = 33")
    );
}

/// The single-line `run:` commands of a GitHub Actions workflow, by lines
/// (its multi-line `run: |` scripts are left out: they install tools).
fn workflow_runs(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("run: "))
        .map(str::trim)
        .filter(|r| *r != "|")
        .map(str::to_string)
        .collect()
}

/// The workspace tests the Windows workflow runs: the packages that cannot
/// be tested in user mode on Windows left out (scripts/windows-tests.sh).
const WINDOWS_TESTS: &str = "cargo test --workspace --exclude ksspi-driver --exclude ksspi-fuzz";

#[test]
fn the_windows_workflow_runs_what_the_docs_say() {
    let yaml = read(".github/workflows/windows.yaml");
    let runs = workflow_runs(&yaml);
    let readme = read("README.md");
    let windows = read("docs/WINDOWS.md");
    // Each command the workflow runs, and the page that tells users to run
    // the same one.
    for (command, page, doc) in [
        ("cargo make", "docs/WINDOWS.md", &windows),
        (WINDOWS_TESTS, "docs/WINDOWS.md", &windows),
        (
            "cargo build --release -p ksspictl",
            "docs/WINDOWS.md",
            &windows,
        ),
        (
            "bash scripts/setup.sh && bash scripts/test.sh",
            "README.md",
            &readme,
        ),
    ] {
        assert!(
            runs.iter().any(|r| r == command),
            "the workflow runs `{command}`: {runs:?}"
        );
        assert!(doc.contains(command), "{page} names `{command}`");
    }
    // Nothing else runs unannounced.
    assert_eq!(runs.len(), 4, "{runs:?}");
    // The Linux checks build (scripts/windows-harness-check.sh) and run under
    // Wine (scripts/windows-harness-wine.sh) the same tests for
    // x86_64-pc-windows-gnu: the command is stated once for both scripts.
    let tests_script = read("scripts/windows-tests.sh");
    assert!(
        tests_script.contains(&format!("WINDOWS_TESTS=\"{WINDOWS_TESTS}\"")),
        "scripts/windows-tests.sh names `{WINDOWS_TESTS}`"
    );
    for script in [
        "scripts/windows-harness-check.sh",
        "scripts/windows-harness-wine.sh",
    ] {
        let text = read(script);
        assert!(
            text.contains("source scripts/windows-tests.sh") && text.contains("windows_tests "),
            "{script} builds the Windows tests through scripts/windows-tests.sh"
        );
    }
    // Every package the workflow leaves out exists (a rename would make
    // `--exclude` fail on the runner only).
    for (package, manifest) in [
        ("ksspi-driver", "Cargo.toml"),
        ("ksspi-fuzz", "crates/ksspi-fuzz/Cargo.toml"),
    ] {
        assert!(
            WINDOWS_TESTS.contains(&format!("--exclude {package}"))
                && read(manifest).contains(&format!("name = \"{package}\"")),
            "{manifest} is the package {package} the workflow leaves out"
        );
    }
    // The artifact: its name in the README, the package folder it holds in
    // docs/WINDOWS.md (cargo make's output, Windows separators there).
    assert!(yaml.contains("name: ksspi-driver-package"));
    assert!(
        readme.contains("ksspi-driver-package"),
        "README names the artifact"
    );
    assert!(yaml.contains("target/debug/ksspi_driver_package/"));
    assert!(windows.contains("target\\debug\\ksspi_driver_package\\"));
    assert!(windows.contains("ksspi-driver-package"));
    // Upstream's way of getting the WDK, as the docs describe it.
    for piece in [
        "microsoft.windows.wdk.x64",
        "LLVM.LLVM",
        "tool: cargo-make",
        "windows-2025",
    ] {
        assert!(yaml.contains(piece), "the workflow has {piece}");
    }
    assert!(windows.contains("microsoft/windows-drivers-rs"));
    assert!(windows.contains("ksspictl acceptance"));
}

#[test]
fn workflow_runs_are_read_by_lines() {
    let yaml = "steps:\n  - name: a\n    run: cargo make\n  - run: |\n      echo x\n";
    assert_eq!(workflow_runs(yaml), ["cargo make"]);
}
