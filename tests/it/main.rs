//! Integration tests: the `sslpipe` binary and library driven as a user would, on fixtures made
//! in temporary folders. They need the ONNX Runtime library (`scripts/setup.sh` installs it).

mod cli;
mod embed;
mod eval;
mod feast;
mod pipelines;
mod pretext;
mod pretrain;
mod s3;
mod sources;
mod support;
