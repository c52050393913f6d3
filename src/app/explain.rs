pub(super) fn explain(
    _rt: &tokio::runtime::Runtime,
    cfg: &crate::config::Config,
    email: &str,
    _online: bool,
    _output: crate::cli::Format,
) -> crate::sync::ExitCode {
    super::inspect::explain(cfg, email)
}
