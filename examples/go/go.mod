module woq-example

go 1.19

require woq v0.0.0

replace woq => ../../bindings/go/woq
